"""Red teaming (section 4.3): helpfulness rankers and the pipeline prompts -> samples -> judge -> rank ->
BFPO pairs (``bfpo redteam``)."""
