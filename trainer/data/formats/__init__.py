"""One module per dataset format; each exposes ``read(root, split, policy, videos_dir)`` and ``MARKERS``."""
