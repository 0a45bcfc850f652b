"""Privacy audit: a learned feature-inversion attack on released MistNet features, scored by SSIM and PSNR."""
