"""SAM-family engines (torch). Import lazily: nothing here is needed in remote (service) mode."""
