"""The worker: FastStream consumers, the broker topology and the inbox."""
