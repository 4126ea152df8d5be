"""odebench's built-in solver plugins, installed as the package ``odebench_plugins``."""
