"""The camera node: sources, detection, reading, tracking, voting, the pipeline, the
service, its outbox and link, its watchlist replica."""
