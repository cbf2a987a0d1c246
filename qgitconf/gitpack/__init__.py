"""The untrusted-pack pipeline and git object storage: the only package that imports dulwich."""
