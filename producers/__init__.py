"""Edge producer daemons: private feature release to RabbitMQ."""
