"""The built-in data formats (imported for their registrations)."""
