"""SAM's prompt encoder and mask decoder rewritten for export: the same weights and the same arithmetic
(up to float rounding), laid out so that ONNX Runtime spends its time in matrix products.

- Image tokens stay "tokens-last" (N = 64*64 rows, C columns) from start to end: no transposes of image-sized
  tensors between attention heads. Attention between the image and the few prompt tokens uses block-diagonal
  products: the T prompt tokens are repeated once per head, masked to that head's channels, so one matrix
  product gives every head's scores and a masked sum recombines the heads.
- ``ConvTranspose2d(kernel 2, stride 2)`` of the output upscaling is a matrix product to (2, 2, C_out) per pixel;
  ``LayerNorm2d`` becomes a plain layer norm over the last axis; the hypernetwork product is taken before the
  pixels are put back in image order (a small transpose of K masks instead of a large one of 32 channels).
- What depends only on the slice (image tokens + no-mask embedding, and the first layer's three projections of
  them) is a graph of its own (:class:`PrepareGraph`), run once per slice and kept for the next prompts.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

PREPARED = ("keys0", "k0_t2i", "v0_t2i", "q0_i2t")  # PrepareGraph's outputs, in DecoderGraph's input order


class _Common(torch.nn.Module):
    def __init__(self, sam):
        super().__init__()
        pe = sam.prompt_encoder
        self.mask_decoder = sam.mask_decoder
        self.transformer = sam.mask_decoder.transformer
        self.pe_layer = pe.pe_layer
        h, w = pe.input_image_size
        self.emb_hw = tuple(pe.image_embedding_size)
        attn = self.transformer.layers[0].cross_attn_token_to_image
        self.heads = attn.num_heads
        with torch.no_grad():
            self.register_buffer("coord_size", torch.tensor([float(w), float(h)]))
            self.register_buffer("image_pe", pe.get_dense_pe().flatten(2).transpose(1, 2)[0].contiguous().clone())
            self.register_buffer("dense", pe.no_mask_embed.weight.detach().clone())  # (1, C), on every pixel
            self.register_buffer("not_a_point", pe.not_a_point_embed.weight.detach().clone())
            self.register_buffer("point_weights", torch.cat([e.weight for e in pe.point_embeddings]).detach().clone())
            md = self.mask_decoder
            tokens = torch.cat([md.iou_token.weight, md.mask_tokens.weight])
            self.register_buffer("output_tokens", tokens.detach().clone())
            head_of = torch.arange(attn.internal_dim) // (attn.internal_dim // self.heads)
            head_mask = (head_of[None, :] == torch.arange(self.heads)[:, None]).float()  # (heads, C')
            self.register_buffer("head_mask", head_mask[:, None, :])


class PrepareGraph(_Common):
    """features (1, C, h, w) -> image tokens (N, C) and the first layer's projections of them."""

    def forward(self, image_embeddings):
        c = image_embeddings.shape[1]
        keys = image_embeddings.reshape(c, -1).transpose(0, 1) + self.dense
        kpe = keys + self.image_pe
        layer = self.transformer.layers[0]
        return (keys, layer.cross_attn_token_to_image.k_proj(kpe), layer.cross_attn_token_to_image.v_proj(keys),
                layer.cross_attn_image_to_token.q_proj(kpe))


class DecoderGraph(_Common):
    """Prepared image tokens + labelled points (box corners: labels 2, 3; padding: -1) -> (1, K, 4h, 4w) mask
    logits (mask 0: the single-mask output, 1..3: the multimask candidates) and (1, K) predicted IoU."""

    def _tokens_to_image(self, attn, q, k, v):
        """Prompt tokens (T, C') attend to the image's projected keys/values (N, C')."""
        t, c = q.shape
        qbd = (q[None] * self.head_mask).reshape(self.heads * t, c)  # a row per (head, token)
        p = torch.softmax(torch.matmul(qbd, k.transpose(0, 1)) * (1.0 / math.sqrt(c // self.heads)), dim=-1)
        r = torch.matmul(p, v).reshape(self.heads, t, c)
        return attn.out_proj((r * self.head_mask).sum(0))

    def _image_to_tokens(self, attn, q, k, v):
        """The image's projected queries (N, C') attend to the prompt tokens' keys/values (T, C')."""
        n, c = q.shape
        t = k.shape[0]
        kbd = (k[None] * self.head_mask).reshape(self.heads * t, c)
        vbd = (v[None] * self.head_mask).reshape(self.heads * t, c)
        s = torch.matmul(q, kbd.transpose(0, 1)) * (1.0 / math.sqrt(c // self.heads))
        p = torch.softmax(s.reshape(n, self.heads, t), dim=-1).reshape(n, self.heads * t)
        return attn.out_proj(torch.matmul(p, vbd))

    def forward(self, keys0, k0_t2i, v0_t2i, q0_i2t, point_coords, point_labels):
        # PromptEncoder: shift to pixel centres, scale to 0..1, random-Fourier encoding, label embeddings
        emb = self.pe_layer._pe_encoding((point_coords + 0.5) / self.coord_size)[0]
        labels = point_labels[0].unsqueeze(-1)
        emb = emb * (labels != -1).to(emb.dtype) + self.not_a_point * (labels == -1).to(emb.dtype)
        for i in range(self.point_weights.shape[0]):
            emb = emb + self.point_weights[i] * (labels == i).to(emb.dtype)
        query_pe = torch.cat([self.output_tokens, emb], 0)  # (T, C)
        queries, keys, key_pe = query_pe, keys0, self.image_pe
        for i, layer in enumerate(self.transformer.layers):
            if layer.skip_first_layer_pe:
                queries = layer.self_attn(queries[None], queries[None], queries[None])[0]
            else:
                q = queries + query_pe
                queries = queries + layer.self_attn(q[None], q[None], queries[None])[0]
            queries = layer.norm1(queries)
            t2i, i2t = layer.cross_attn_token_to_image, layer.cross_attn_image_to_token
            if i == 0:  # the image-side projections of the first layer come prepared
                k, v, qi = k0_t2i, v0_t2i, q0_i2t
            else:
                kpe = keys + key_pe
                k, v, qi = t2i.k_proj(kpe), t2i.v_proj(keys), i2t.q_proj(kpe)
            queries = layer.norm2(queries + self._tokens_to_image(t2i, t2i.q_proj(queries + query_pe), k, v))
            queries = layer.norm3(queries + layer.mlp(queries))
            qt = queries + query_pe
            keys = layer.norm4(keys + self._image_to_tokens(i2t, qi, i2t.k_proj(qt), i2t.v_proj(queries)))
        final = self.transformer.final_attn_token_to_image
        q = final.q_proj(queries + query_pe)
        queries = queries + self._tokens_to_image(final, q, final.k_proj(keys + key_pe), final.v_proj(keys))
        queries = self.transformer.norm_final_attn(queries)
        md = self.mask_decoder
        iou = md.iou_prediction_head(queries[0:1])
        tokens = queries[1:1 + md.num_mask_tokens]
        hyper = torch.stack([mlp(tokens[i]) for i, mlp in enumerate(md.output_hypernetworks_mlps)], 0)  # (K, C2)
        up1, norm, act1, up2, act2 = md.output_upscaling
        h, w = self.emb_hw
        c1, c2 = up1.weight.shape[1], up2.weight.shape[1]
        # ConvTranspose2d(k=2, s=2): pixel (i, j) -> its 2 x 2 children (a, b), channels last
        x = torch.matmul(keys, up1.weight.permute(0, 2, 3, 1).reshape(up1.weight.shape[0], 4 * c1)) + up1.bias.repeat(4)
        x = x.reshape(h, w, 2, 2, c1).permute(0, 2, 1, 3, 4).reshape(4 * h * w, c1)  # rows: (2h, 2w) in order
        x = act1(F.layer_norm(x, (c1,), norm.weight, norm.bias, norm.eps))
        y = torch.matmul(x, up2.weight.permute(0, 2, 3, 1).reshape(c1, 4 * c2)) + up2.bias.repeat(4)
        y = act2(y).reshape(16 * h * w, c2)  # rows: (2h, 2w, a, b)
        m = torch.matmul(y, hyper.transpose(0, 1))  # (16hw, K)
        k = m.shape[1]
        m = m.reshape(2 * h, 2 * w, 2, 2, k).permute(4, 0, 2, 1, 3).reshape(1, k, 4 * h, 4 * w)
        return m, iou
