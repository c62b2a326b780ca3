"""Students, their links, tasks, evaluations and sessions; the write services and computations on them."""
