"""Pipeline stages: one function per stage, each reading and writing plain model folders."""
