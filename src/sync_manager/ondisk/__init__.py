"""ondisk."""
