"""RabbitMQ adapters (aio-pika): connecting, the topology, confirmed publishing, provisioning."""
