"""Sources, sinks, mask refinement, HUD and the threaded capture → segment → render pipeline."""
