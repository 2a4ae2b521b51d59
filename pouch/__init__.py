"""Generated wire types of the Pouch contract (proto/)."""
