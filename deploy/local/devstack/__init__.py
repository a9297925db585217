"""Local real stack: Kafka, a Geth Clique network and PostgreSQL on loopback."""
