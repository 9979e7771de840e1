"""The team backend: the store's records and blobs on shared servers (PostgreSQL, S3-compatible
object storage), and ``pipulate store copy`` between a workstation's store and a team's."""
