"""Role prompt layouts: the contract between the training data and the search.

`formats.prompts` builds each role's messages by `prompt_format` (`plain` | `nemotron`);
`formats.messages` holds the message types every layer shares. This package sits below both
`data/` and `scaling/` and imports neither.
"""
