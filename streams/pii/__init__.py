"""PII encryption at rest in Kafka (crypto-shredding): cipher, keyring, vault, erase CLI."""
