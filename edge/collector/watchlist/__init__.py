"""The master watchlists: the store, its files, the server that distributes them, the CLI."""
