//! Placeholder: the bodies of the fuzz targets, shared with the corpus replay tests (issue 5).
