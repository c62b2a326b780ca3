"""The transactional outbox: the writer used inside transactions and the relay that publishes."""
