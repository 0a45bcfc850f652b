"""The ``edge.done`` event from the ledger's totals (pure): what the cloud waits for before round 1."""

from __future__ import annotations

from producers.edge.ledger import Totals
from shared.privacy import PrivacyParams
from shared.wire.events import EdgeDone, PrivacySummary


def edge_done_event(job: str, edge: str, totals: Totals, privacy: PrivacyParams, bits_per_image: int) -> EdgeDone:
    """Cumulative counts of ``job``'s confirmed batches; ``batches`` = n means seqs 0..n-1 all confirmed.

    Raises ValueError when the confirmed seqs have a gap: the cloud would wait for a batch forever.
    """
    if not totals.confirmed_seqs_contiguous:
        raise ValueError(f"confirmed batches of job {job} are not seqs 0..{totals.batches - 1}; not sending edge.done")
    summary = PrivacySummary(
        mechanism=privacy.mechanism.value,
        epsilon=privacy.epsilon,
        epsilon_bit=privacy.epsilon_bit,
        epsilon_image=privacy.epsilon_image(bits_per_image),
    )
    return EdgeDone.model_validate(
        {
            "job": job,
            "source": f"edge/{edge}",
            "edge": edge,
            "images_released": totals.images_released,
            "train_images": totals.train_images,
            "val_images": totals.val_images,
            "batches": totals.batches,
            "bytes_sent": totals.bytes_sent,
            "privacy": summary,
            # Beyond the schema (readers ignore unknown fields): skips, and the largest ε any image has spent
            # (above epsilon_image only where images were re-released).
            "images_skipped": totals.images_skipped,
            "epsilon_spent_max": totals.epsilon_spent_max,
        }
    )


def done_message_id(job: str, edge: str, totals: Totals) -> str:
    """Same counts, same id: a re-publish after a restart is recognised as a duplicate."""
    return f"edge.done:{job}:{edge}:{totals.batches}:{totals.images_released}"
