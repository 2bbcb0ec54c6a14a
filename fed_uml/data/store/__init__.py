"""The prepared data store.

Each real modality decoded once into a memory-mappable file, then streamed batch by batch by every
run and every institution.

Why: reading every chosen patch into float32 tensors (plus the copies normalising makes) needs
about three times the tensors' size in memory and re-decodes every file on every run and in every
institution; full BigEarthNet or SEN12MS does not fit a 24 GiB machine that way. A store is
written once per (data set, modality, settings) by a parallel, resumable, checksummed pass over
the native archive (`prepare`), and read back by positioned reads of the rows a batch needs
(`reader`), normalised per batch with statistics combined from per-row sums (`dataset`).

Layout
    settings.py        `dataset.storage` and `dataset.store.*`, checked before any file is touched
    layout.py          the files of a store, the stored dtype, checksums, row statistics
    locking.py         one writer per store (a file lock; the second process waits)
    index.py           the index table of a sensor: every patch of every split, read once
    prepare.py         the pass that writes a store: blocks, processes, progress, manifest
    modality_store.py  open a modality's store, preparing, resuming or repairing it first
    reader.py          positioned reads of rows; bytes read per process
    dataset.py         StoredImages / StreamedDataset: a store as the loop's ArrayDataset
    assemble.py        the real-data steps over stores (`dataset.storage`: auto, memory, stream)
"""
