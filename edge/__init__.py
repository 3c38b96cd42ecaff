"""anpr-edge: open number plate recognition for camera nodes beside the road."""
