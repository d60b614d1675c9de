"""The model: encoder, network, LightningModule, the one factory, pretrained loading and conversion."""
