"""Scripts of the README's "Label your own images": a folder of real images, and people."""
