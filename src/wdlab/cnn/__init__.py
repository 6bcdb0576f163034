"""The built-in CNN, and K of them trained at once with a hand-written forward and backward.

:class:`GroupedCNN` runs K configurations of :class:`CNN` without ``torch.vmap`` or autograd's
per-node work. Activations are held as ``(K, C, *spatial, n)``: the configurations first, the
examples last, so that every op runs on large blocks of whole ``n``-vectors:

- a convolution (3-wide, padding 1) is one batched GEMM per layer: the weights
  ``(K, C_out, C_in·taps)`` times the input's shifted copies ``(K, C_in·taps, spatial·n)``
  (im2col; the first layer's input is shared by all K, so its copies are made once);
- BatchNorm is per row of ``(K·C, spatial·n)``: each configuration's channels get their own
  statistics (two-pass mean and variance, as torch's kernel) and update their own rows of the
  stacked running buffers. The first layer's statistics follow from the shared input's mean
  and covariance, so its BatchNorm folds into the convolution's GEMM (weights ``a·w``, bias
  ``β − a·mean``), forward and backward (:func:`_shared_batch_norm`); in eval mode every
  BatchNorm folds into its convolution with the running statistics;
- max-pooling takes the larger of two strided slices of whole ``n``-vectors, and comes before
  the ReLU that precedes it in :class:`CNN`: the two commute exactly (both are monotone; ties
  go to the first element, as in ``MaxPool``, and so do the gradients), so the ReLU acts on half
  as many values;
- global average pooling, Dropout (independent masks per configuration, from torch's RNG) and
  the heads (one batched GEMM, logits laid out ``(K, out, n)``) follow.

:meth:`GroupedCNN.backward` is the hand-written backward: the kernels autograd would call
(``native_batch_norm_backward``, ``threshold_backward``, GEMMs) on the same layout. Where
autograd is needed (a custom loss) the whole network is one ``torch.autograd.Function`` whose
backward is that one. Under bf16 autocast the engine runs the :class:`CNN` module instead
(:class:`~wdlab.engines.grouped.GroupedCNNEngine`): autocast sets each op's dtype there.
Each configuration computes what its own ``CNN`` computes, to float rounding (tested against
autograd through each ``CNN``, values and gradients).
"""

from wdlab.cnn.grouped import EVAL_CHUNK_BYTES, GroupedCNN
from wdlab.cnn.model import CNN

__all__ = ["CNN", "EVAL_CHUNK_BYTES", "GroupedCNN"]
