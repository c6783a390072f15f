"""Integrations of crossent's losses into other libraries' training loops.

Each submodule needs its library, installed with the matching extra, and is imported on its
own: ``crossent.integrations.transformers`` (``pip install 'crossent[transformers]'``) makes a
Hugging Face ``*ForCausalLM`` compute its training loss with
:func:`crossent.torch.linear_cross_entropy`, without the (batch, sequence, vocabulary) logits.
"""
