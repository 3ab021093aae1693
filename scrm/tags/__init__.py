"""Tags: the corp tag library mirrored from WeCom, and the tags on each friendship."""
