"""AlexNet as the MIE424 study used it (Krizhevsky et al., 2012, without local
response normalisation and without the two-GPU grouping).

At 227x227 RGB input with 10 classes this is exactly the study's network:
58,322,314 parameters, layers named conv1..conv5 and fc1..fc3 so that
state_dicts saved by the original scripts load. Any input from 67 px up works:
fc1 is sized from the feature map that survives the three max-poolings.
"""
import torch
from torch import nn

from core.activations import ACTIVATIONS

MIN_IMAGE_SIZE = 67  # smallest input that survives conv1 and the three poolings


def feature_size(image_size: int) -> int:
    """Side of the 256-channel map after conv5's pooling (6 at 227 px, 1 at 67 px)."""
    if image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"AlexNet needs an input of at least {MIN_IMAGE_SIZE} px, got {image_size}")
    side = (image_size - 11) // 4 + 1  # conv1, stride 4, no padding
    for _ in range(3):  # three 3x3 stride-2 max-poolings; conv2..conv5 keep the size
        side = (side - 3) // 2 + 1
    return side


class AlexNet(nn.Module):
    def __init__(self, num_classes: int = 10, activation: str = "relu", dropout: float = 0.0,
                 in_channels: int = 3, image_size: int = 227):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose from {', '.join(ACTIVATIONS)}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        side = feature_size(image_size)
        self.act = ACTIVATIONS[activation]()  # stateless, so one instance serves every layer
        self.pool = nn.MaxPool2d(kernel_size=3, stride=2)
        # dropout on the flattened features and after fc1's and fc2's activations; none at p = 0
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

        self.conv1 = nn.Conv2d(in_channels, 96, kernel_size=11, stride=4)  # 227 -> 55, pool -> 27
        self.conv2 = nn.Conv2d(96, 256, kernel_size=5, padding=2)          # 27, pool -> 13
        self.conv3 = nn.Conv2d(256, 384, kernel_size=3, padding=1)         # 13
        self.conv4 = nn.Conv2d(384, 384, kernel_size=3, padding=1)         # 13
        self.conv5 = nn.Conv2d(384, 256, kernel_size=3, padding=1)         # 13, pool -> 6
        self.fc1 = nn.Linear(256 * side * side, 4096)                      # 9216 -> 4096 at 227 px
        self.fc2 = nn.Linear(4096, 4096)
        self.fc3 = nn.Linear(4096, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.act(self.conv1(x)))
        x = self.pool(self.act(self.conv2(x)))
        x = self.act(self.conv3(x))
        x = self.act(self.conv4(x))
        x = self.pool(self.act(self.conv5(x)))
        x = torch.flatten(x, 1)
        x = self.act(self.fc1(self.drop(x)))
        x = self.act(self.fc2(self.drop(x)))
        return self.fc3(self.drop(x))


def loaded(state_dict: dict, **kwargs) -> AlexNet:
    """AlexNet(**kwargs) holding state_dict's weights, built on the meta device so that no time
    goes into initialising weights the state replaces (a resume rebuilds every member this way)."""
    with torch.device("meta"):
        model = AlexNet(**kwargs)
    model.load_state_dict(state_dict, assign=True)
    return model


def parameter_count(image_size: int, num_classes: int) -> int:
    """AlexNet's parameters at this input size (counted on the meta device: no memory)."""
    with torch.device("meta"):
        return sum(p.numel() for p in AlexNet(num_classes, image_size=image_size).parameters())
