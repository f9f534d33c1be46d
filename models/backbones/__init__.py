"""Importing this package registers every backbone."""

from models.backbones import resnet_cifar  # noqa: F401
