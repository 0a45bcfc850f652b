"""The edge producer daemon: private feature release from local images to RabbitMQ and S3."""
