"""The operators' console: a web page the collector serves (live hits, search, cameras, lists)."""
