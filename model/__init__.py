"""Model families the matrix exports, each re-implemented from its spec (``../shared/spec``) in its own
sub-package: :mod:`model.bgmv2` (BackgroundMattingV2) today, ``model.rvm`` (RobustVideoMatting) next."""
