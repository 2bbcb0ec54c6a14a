"""The real data sets as modalities: readers -> unpaired scene selection -> ModalityData in physical units.

`load_real(cfg, readers)` assembles one real data set in five small steps, one module each:
    `settings`  read and check the settings (`RealSettings`), before any file is touched;
    `index`     index every modality's scenes per official split, no pixel read;
    `labels`    the label set, the same for every modality (multi-label patches with
                their rarest-label strata, or the single-label rule, `dataset.classes`,
                `dataset.num_classes`);
    `deal`      which scenes each modality gets: the unpaired deal and per-class subsets;
    `pixels`    read the chosen scenes' pixels into `ModalityData`.
Data sets assembled here, each registered in `fed_uml.data.catalog` as `load_real` with its
{sensor: reader class} table (config group ``dataset``, files conf/dataset/<name>.yaml):
    ``eurosat``         EuroSAT-SAR (``sar``) vs EuroSAT RGB (``rgb``), the study's pairing;
                        ``ms``/``nir_swir``/... from EuroSAT MS are selectable too.
    ``eurosat_ms``      two optical modalities cut from the same EuroSAT MS tiles
                        (default ``rgb`` vs ``nir_swir``), on disjoint tiles; runs on the
                        shared sample.
    ``bigearthnet``     BigEarthNet-MM v1.0: ``s1`` vs ``s2`` (``rgb`` selectable).
    ``bigearthnet_v2``  reBEN: ``s1`` vs ``s2``.
    ``sen12ms``         SEN12MS: ``s1`` vs ``s2``.

Settings (declared with their types and defaults in `fed_uml.schema.datasets`), besides those
every data set has (name, root, modalities, sensors, samples_per_class,
test_samples_per_class, image_size, seed):
    ``download``        fetch missing files from the official URLs (checksums verified).
    ``folders``         {sensor: subfolder} to rename a data set's folder under the root.
    ``train_splits``    the official splits pooled for training (default [train]).
    ``test_split``      the official split used for testing (default test).
    ``unpaired``        deal scenes to modalities disjointly (default true; see splits.py).
    ``unpaired_among``  the modalities the deal is made among (default: ``${.modalities}``),
                        so that loading one modality alone (a federated institution) gives
                        it the same scenes as the joint load; their data must be present.
    ``classes``         restrict the label set to these class names (null: all).
    ``num_classes``     if set, the label set must have this many classes (the federated
                        server builds the backbone from it before any data is read).
    ``task``            ``single_label`` (class indices; the default where the setting is
                        absent) or ``multi_label`` (multi-hot targets over the label set,
                        multi-label data sets only; BigEarthNet's schema defaults to it;
                        see `labels.multi_label_set` and `fed_uml.metrics`).
    ``balanced``        the single-label rule of multi-label data sets with
                        ``task: single_label`` (see splits.py).
    ``on_error``        ``raise`` (default) or ``skip``: skip unreadable files, reporting
                        how many (log warning and ``info["skipped"]``).
    ``storage``         ``auto`` (default), ``memory`` or ``stream``: read the chosen patches
                        into tensors, or stream them from the prepared store
                        (`fed_uml.data.store`, settings ``store.*``), where the same steps run
                        over the store's index tables.

Normalisation is kept apart from reading: `load_dataset` standardises each modality with the
per-band mean and standard deviation of its own *training* images (after resampling),
`fed_uml.data.normalize.standardize`, stored in ``info["band_mean"]`` / ``info["band_std"]``;
a federated institution does the same on its own share only.
"""

from fed_uml.data.real.assemble import load_real

__all__ = ["load_real"]
