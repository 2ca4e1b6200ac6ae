"""ARC-AGI-1 / ARC-AGI-2 (with ConceptARC) as a TFDS builder."""
