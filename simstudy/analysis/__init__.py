"""What a study's results say: targets and losses, ranking, sensitivity."""
