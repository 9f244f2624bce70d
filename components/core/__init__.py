"""Components every pipeline shares (not tied to one task): the run's outcome event, the exit handler's task."""
