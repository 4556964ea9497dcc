"""Taking models out of the stack and bringing them in: Hugging Face Llama/Qwen2 and ONNX.

`stack export` writes a directory that a foreign runtime loads with no code of ours
(transformers' `AutoModelForCausalLM`, ONNX Runtime), then loads it in that runtime and
compares its logits with the stack's on a sample (GATE-EXPORT-001, GATE-EXPORT-002). An
artefact whose check fails keeps an `.unverified` name, so nothing unchecked is picked up by
accident. `stack import-hf` goes the other way, for a local Hugging Face Llama or Qwen2
directory with its own tokenizer.

Every module that needs transformers, onnx or onnxruntime imports it inside its functions
through `deps.require`, so the stack runs without the `export` extra and says how to get it.
"""
