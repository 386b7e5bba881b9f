"""Chat templates (jinja, as transformers' `apply_chat_template` renders them) the project supplies.

Tokenizers that carry their own template (SmolLM2's ChatML in its GGUF) keep it; these are for
tokenizers shipped without one.
"""

# Llama-3 / 3.1 / 3.2 instruct format. Every message is a header with its role, a blank line, the
# content and <|eot_id|>; the prompt for a reply is an open assistant header. Contents are trimmed
# as in Meta's reference template, so the model sees exactly the formatting it was tuned on.
LLAMA3_CHAT_TEMPLATE = (
  "{{- '<|begin_of_text|>' -}}"
  "{%- for message in messages -%}"
  "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' -}}"
  "{{- message['content'] | trim -}}"
  "{{- '<|eot_id|>' -}}"
  "{%- endfor -%}"
  "{%- if add_generation_prompt -%}"
  "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}"
  "{%- endif -%}"
)

# Special tokens that close a turn or a document in the families above, for generation stops.
END_OF_TURN_TOKENS = ("<|eot_id|>", "<|eom_id|>", "<|end_of_text|>", "<|im_end|>")
