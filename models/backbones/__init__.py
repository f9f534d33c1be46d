"""Importing this package registers every backbone."""

from models.backbones import densenet_cifar, resnet_cifar, resnet_imagenet, resnext_cifar  # noqa: F401
