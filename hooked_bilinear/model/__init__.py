"""The hooked bilinear transformer and its weight processing."""
