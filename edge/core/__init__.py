"""What the camera node and the collector share: records, plate rules, boxes, the wire
protocols, keys, watchlist entries and matching, logging."""
