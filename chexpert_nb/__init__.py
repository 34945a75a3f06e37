"chexpert_nb: train, evaluate and serve a CheXpert chest X-ray classifier (research use, not a medical device)."
import warnings as _warnings
# fastai's layers call torch.jit.script when fastai is imported, which this torch deprecates with a FutureWarning that
# chexpert-train and chexpert-cache printed, file and line included, before their first line: fastai's, not the
# user's to act on. Only that message is silenced (tests/test_train.py checks the commands start clean).
_warnings.filterwarnings('ignore', message=r'`torch\.jit\.script` is deprecated', category=FutureWarning)
