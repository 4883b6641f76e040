from tests.train.conftest import tiny_demo

__all__ = ["tiny_demo"]  # the same tiny demo set as the training tests
