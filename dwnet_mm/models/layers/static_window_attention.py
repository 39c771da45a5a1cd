"""Static local attention of the paper's Tables 4 and 10: Swin Transformer's
window attention with learned, input-independent attention weights."""
import torch
import torch.nn as nn
from mmengine.model import BaseModule
from mmengine.model.weight_init import trunc_normal_


def _pair(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


class StaticWindowMSA(BaseModule):
    """Window multi-head "attention" whose attention logits are learned
    parameters: a drop-in replacement of mmpretrain's ``WindowMSA`` (the
    ``w_msa`` of its ``ShiftWindowMSA``), with the same call
    ``forward(windows, mask)``.

    Swin's ``softmax(q k^T / sqrt(d) + relative position bias + mask)`` is
    replaced by ``softmax(logits + mask)``: there are no query/key
    projections and no relative position bias, the values keep their
    projection (C -> C, with ``qkv_bias``) and the output projection
    ``proj`` stays. The logits are one (heads, N, N) table per window
    position of the image (the paper's static variant, "not shared across
    windows", Table 4) or one table shared by all windows
    (``shared_across_windows=True``, Table 10).

    Reading of the paper (appendix, "Static version of Swin Transformer"):
    the static weights replace only q k^T and the relative position bias;
    the softmax over them and the shifted windows' mask are kept, so each
    row of weights stays a convex combination as in Swin. The appendix can
    also be read as dropping the softmax; the parameter and FLOP counts are
    the same either way.

    Per-window tables hold a fixed number of windows, so they need a fixed
    input size: the one the model was built for (``img_size`` of Swin).
    Another size raises a ValueError naming the expected size; the window
    count is checked from the shift mask when there is one, from the batch
    of windows otherwise, and exactly from the feature-map size through
    :meth:`check_input_shape` (the ``SwinAblation`` builder calls it before
    every attention). The shared table works at any input size.

    Exports to ONNX with torch's TorchScript-based exporter
    (``torch.onnx.export(..., dynamo=False)``, opset 17; checked against
    onnxruntime for a small static Swin) at a fixed input shape: the
    window count is read from Python-side shapes, so the exported graph
    keeps the batch and input size of the export.

    Args:
        embed_dims (int): Number of input channels C.
        window_size (int | tuple[int]): Height and width of a window.
        num_heads (int): Number of heads (channel groups sharing weights).
        window_grid (tuple[int], optional): Windows per image (rows,
            columns) of the per-window tables. Required unless
            ``shared_across_windows``. Defaults to None.
        shared_across_windows (bool): One table for all windows.
            Defaults to False.
        img_size (int | tuple[int], optional): Input image size the model
            is built for, only to name it in the error message.
            Defaults to None.
        qkv_bias (bool): Bias of the value projection (named after Swin's
            q/k/v projection whose value part it keeps). Defaults to True.
        attn_drop (float): Dropout rate of the attention weights.
            Defaults to 0.
        proj_drop (float): Dropout rate of the output. Defaults to 0.
        init_cfg (dict, optional): Initialization config.
            Defaults to None.
    """

    def __init__(self,
                 embed_dims,
                 window_size,
                 num_heads,
                 window_grid=None,
                 shared_across_windows=False,
                 img_size=None,
                 qkv_bias=True,
                 attn_drop=0.,
                 proj_drop=0.,
                 init_cfg=None):
        super().__init__(init_cfg)
        if embed_dims % num_heads:
            raise ValueError(f'embed_dims {embed_dims} is not divisible by '
                             f'num_heads {num_heads}')
        if not shared_across_windows and window_grid is None:
            raise ValueError('per-window static attention needs '
                             'window_grid, the (rows, columns) of windows '
                             'per image; or use shared_across_windows=True')
        self.embed_dims = embed_dims
        self.window_size = _pair(window_size)
        self.num_heads = num_heads
        self.shared_across_windows = shared_across_windows
        self.window_grid = None if shared_across_windows else _pair(
            window_grid)
        self.img_size = None if img_size is None else _pair(img_size)

        tokens = self.window_size[0] * self.window_size[1]
        table = (num_heads, tokens, tokens)
        if not shared_across_windows:
            table = (self.num_windows, ) + table
        self.attn_logits = nn.Parameter(torch.empty(table))
        self.v = nn.Linear(embed_dims, embed_dims, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(embed_dims, embed_dims)
        self.proj_drop = nn.Dropout(proj_drop)
        self.softmax = nn.Softmax(dim=-1)
        trunc_normal_(self.attn_logits, std=.02)

    @property
    def num_windows(self):
        """int: Windows per image of the per-window tables (None when
        shared)."""
        if self.window_grid is None:
            return None
        return self.window_grid[0] * self.window_grid[1]

    def init_weights(self):
        super().init_weights()
        trunc_normal_(self.attn_logits, std=.02)

    def check_input_shape(self, hw_shape):
        """Raise ValueError when a (H, W) feature map does not have the
        windows of the per-window tables.

        Args:
            hw_shape (tuple[int]): Feature-map size before window padding.
        """
        if self.shared_across_windows:
            return
        grid = tuple(-(-size // window)
                     for size, window in zip(hw_shape, self.window_size))
        if grid != self.window_grid:
            self._raise_mismatch(f'a {hw_shape[0]}x{hw_shape[1]} feature map '
                                 f'({grid[0]}x{grid[1]} windows)')

    def _raise_mismatch(self, got):
        expected = f'{self.window_grid[0]}x{self.window_grid[1]} windows'
        if self.img_size is not None:
            expected += (' per image, i.e. a '
                         f'{self.img_size[0]}x{self.img_size[1]} input')
        raise ValueError(
            f'{type(self).__name__} has per-window weights for {expected}, '
            f'but got {got}. Build the model with img_size equal to the '
            'input size, or share the weights across windows '
            "(attention='static_shared', shared_across_windows=True).")

    def _check_windows(self, num_window_batch, mask):
        if self.shared_across_windows:
            return
        if mask is not None and mask.shape[0] != self.num_windows:
            self._raise_mismatch(f'a shift mask for {mask.shape[0]} windows')
        if num_window_batch % self.num_windows:
            self._raise_mismatch(f'a batch of {num_window_batch} windows')

    def forward(self, x, mask=None):
        """
        Args:
            x (Tensor): Windows (num_windows * B, N, C), image-major (the
                windows of one image are consecutive), as Swin makes them.
            mask (Tensor, optional): Shift mask (num_windows, N, N) with
                values in (-inf, 0]. Defaults to None.

        Returns:
            Tensor: (num_windows * B, N, C).
        """
        num_window_batch, tokens, channels = x.shape
        self._check_windows(num_window_batch, mask)
        heads = self.num_heads
        logits = self.attn_logits
        if self.shared_across_windows:
            logits = logits.unsqueeze(0)
        if mask is not None:
            logits = logits + mask.unsqueeze(1)
        weights = self.softmax(logits)  # (windows or 1, heads, N, N)

        # Expand the input-independent weights to every image so that
        # dropout masks differ per image and FLOP counters see the real
        # batch of the matmul (it copies the broadcast operand anyway).
        windows = weights.shape[0]
        images = num_window_batch // windows
        weights = self.attn_drop(weights.expand(images, -1, -1, -1, -1))
        v = self.v(x).view(images, windows, tokens, heads, channels // heads)
        x = weights @ v.transpose(2, 3)  # (images, windows, heads, N, d)
        x = x.transpose(2, 3).reshape(num_window_batch, tokens, channels)
        return self.proj_drop(self.proj(x))
