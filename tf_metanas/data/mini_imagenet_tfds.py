"""A TFDS builder for mini-ImageNet, prepared from manually downloaded files.

Importing this module registers the dataset name `mini_imagenet` with TFDS.
"""

import tensorflow_datasets as tfds

from tf_metanas.data import mini_imagenet


class MiniImagenet(tfds.core.GeneratorBasedBuilder):
  """mini-ImageNet: 100 ImageNet classes, 600 images each, 84x84, split 64 / 16 / 20."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Put one of these layouts in the manual_dir (`tfds build --manual_dir=...` or "
      "DownloadConfig(manual_dir=...)): mini-imagenet-cache-{train,val,test}.pkl; "
      "train.csv, val.csv, test.csv (Ravi & Larochelle 2017) with the JPEGs in images/; "
      "or folders train/<wnid>/, val/<wnid>/, test/<wnid>/ of JPEGs. The data is ImageNet's "
      "and cannot be downloaded automatically.")

  def _info(self):
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(mini_imagenet.IMAGE_SIZE,
                                                mini_imagenet.IMAGE_SIZE, 3)),
            "label": tfds.features.Text(),
        }),
        supervised_keys=("image", "label"),
        description="mini-ImageNet few-shot benchmark (labels are WordNet ids).",
    )

  def _split_generators(self, dl_manager):
    classes = mini_imagenet.read_files(dl_manager.manual_dir)
    return {"train": self._generate_examples(classes["train"]),
            "validation": self._generate_examples(classes["val"]),
            "test": self._generate_examples(classes["test"])}

  def _generate_examples(self, classes):
    for wnid, images in classes:
      for i, image in enumerate(images):
        yield f"{wnid}_{i:05d}", {"image": image, "label": wnid}
