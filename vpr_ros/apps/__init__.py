"""Command-line applications: each module has a main(argv) -> int and is an installed executable."""
