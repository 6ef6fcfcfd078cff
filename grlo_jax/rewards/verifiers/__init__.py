"""Rule-based verifiers: math final answers, multiple choice, and code run in a sandbox."""
