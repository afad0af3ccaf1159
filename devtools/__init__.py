"""Developer tools of the bot bridge (not shipped): the benchmark harness."""
