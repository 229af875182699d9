"""metastore: a persistent store of Cornerstone3D metadata for DICOM archives."""
