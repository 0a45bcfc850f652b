"""Object storage for claim-checked payloads and model artifacts: S3 (boto3) or a local folder."""
