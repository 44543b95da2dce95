"""The shipped base: size, levels, label-map coverage of every data set, paraphrase hygiene."""

import pytest

from geostrata.errors import KnowledgeBaseError
from geostrata.knowledge.base import KnowledgeBase
from geostrata.knowledge.paraphrase import (
    evaluate_paraphrases,
    load_paraphrases,
    name_violations,
    required_ids,
)
from geostrata.knowledge.protocol import LEVELS

# Class names as each data set spells them (folder names / annotation labels).
CLASSES = {
    "ucmerced": "agricultural airplane baseballdiamond beach buildings chaparral denseresidential "
    "forest freeway golfcourse harbor intersection mediumresidential mobilehomepark overpass "
    "parkinglot river runway sparseresidential storagetanks tenniscourt".split(),
    "aid": "Airport BareLand BaseballField Beach Bridge Center Church Commercial DenseResidential "
    "Desert Farmland Forest Industrial Meadow MediumResidential Mountain Park Parking Playground "
    "Pond Port RailwayStation Resort River School SparseResidential Square Stadium StorageTanks "
    "Viaduct".split(),
    "nwpu_resisc45": "airplane airport baseball_diamond basketball_court beach bridge chaparral "
    "church circular_farmland cloud commercial_area dense_residential desert forest freeway "
    "golf_course ground_track_field harbor industrial_area intersection island lake meadow "
    "medium_residential mobile_home_park mountain overpass palace parking_lot railway "
    "railway_station rectangular_farmland river roundabout runway sea_ice ship snowberg "
    "sparse_residential stadium storage_tank tennis_court terrace thermal_power_station "
    "wetland".split(),
    "whu_rs19": "Airport Beach Bridge Commercial Desert Farmland footballField Forest Industrial "
    "Meadow Mountain Park Parking Pond Port railwayStation Residential River Viaduct".split(),
    "dota_v2": "plane ship storage-tank baseball-diamond tennis-court basketball-court "
    "ground-track-field harbor bridge large-vehicle small-vehicle helicopter roundabout "
    "soccer-ball-field swimming-pool container-crane airport helipad".split(),
    "xview": ["Fixed-wing Aircraft", "Small Aircraft", "Cargo Plane", "Helicopter",
              "Passenger Vehicle", "Small Car", "Bus", "Pickup Truck", "Utility Truck", "Truck",
              "Cargo Truck", "Truck w/Box", "Truck Tractor", "Trailer", "Truck w/Flatbed",
              "Truck w/Liquid", "Crane Truck", "Railway Vehicle", "Passenger Car", "Cargo Car",
              "Flat Car", "Tank car", "Locomotive", "Maritime Vessel", "Motorboat", "Sailboat",
              "Tugboat", "Barge", "Fishing Vessel", "Ferry", "Yacht", "Container Ship",
              "Oil Tanker", "Engineering Vehicle", "Tower crane", "Container Crane",
              "Reach Stacker", "Straddle Carrier", "Mobile Crane", "Dump Truck", "Haul Truck",
              "Scraper/Tractor", "Front loader/Bulldozer", "Excavator", "Cement Mixer",
              "Ground Grader", "Hut/Tent", "Shed", "Building", "Aircraft Hangar",
              "Damaged Building", "Facility", "Construction Site", "Vehicle Lot", "Helipad",
              "Storage Tank", "Shipping container lot", "Shipping Container", "Pylon", "Tower"],
    "worldcover": ["Tree cover", "Shrubland", "Grassland", "Cropland", "Built-up",
                   "Bare / sparse vegetation", "Snow and ice", "Permanent water bodies",
                   "Herbaceous wetland", "Mangroves", "Moss and lichen"],
    "corine": ["Artificial surfaces", "Agricultural areas", "Forest and semi natural areas",
               "Wetlands", "Water bodies", "Urban fabric",
               "Industrial, commercial and transport units", "Mine, dump and construction sites",
               "Artificial, non-agricultural vegetated areas", "Arable land", "Permanent crops",
               "Pastures", "Heterogeneous agricultural areas", "Forests",
               "Scrub and/or herbaceous vegetation associations",
               "Open spaces with little or no vegetation", "Inland wetlands", "Maritime wetlands",
               "Inland waters", "Marine waters"],
    # NLCD (USGS National Land Cover Database): its Level II classes, then Level I
    "nlcd": ["Open Water", "Perennial Ice/Snow", "Developed, Open Space",
             "Developed, Low Intensity", "Developed, Medium Intensity", "Developed, High Intensity",
             "Barren Land (Rock/Sand/Clay)", "Deciduous Forest", "Evergreen Forest",
             "Mixed Forest", "Dwarf Scrub", "Shrub/Scrub", "Grassland/Herbaceous",
             "Sedge/Herbaceous", "Lichens", "Moss", "Pasture/Hay", "Cultivated Crops",
             "Woody Wetlands", "Emergent Herbaceous Wetlands", "Water", "Developed", "Barren",
             "Forest", "Shrubland", "Herbaceous", "Planted/Cultivated", "Wetlands"],
}
SYNTHETIC = {
    "scene": ["residential", "industrial", "farmland", "forest", "meadow", "bare_land", "river",
              "harbor", "beach", "airport", "parking_lot", "playground"],
    "region": ["water", "grass", "forest_canopy", "bare_soil", "sand", "pavement", "cropland"],
    "object": ["building", "car", "ship", "airplane", "storage_tank", "tree", "road", "runway",
               "sports_court"],
    "attribute": ["urban", "rural", "sparse", "medium", "dense"],
}
DATASET_LEVEL = {"dota_v2": "object", "xview": "object", "worldcover": "region", "corine": "region",
                 "nlcd": "region"}


@pytest.fixture(scope="module")
def kb(tmp_path_factory):
    from geostrata.knowledge.encoder import HashingEncoder

    return KnowledgeBase.load(encoder=HashingEncoder(64), cache_dir=tmp_path_factory.mktemp("c"))


def test_default_base_is_large_and_covers_every_level(kb):
    stats = kb.stats()
    assert stats.n_entries >= 200
    assert all(stats.per_level[level] > 0 for level in LEVELS)
    assert all(len(e.description.split()) >= 8 for e in kb.entries), "descriptions too thin"


def test_label_map_rows_resolve_to_existing_entries(kb):
    for dataset, labels in kb.label_map.items():
        for label, entry_id in labels.items():
            assert kb.get(entry_id).id == entry_id
            assert kb.resolve(label, dataset) == entry_id


@pytest.mark.parametrize("dataset", sorted(CLASSES))
def test_every_dataset_class_is_covered(kb, dataset):
    assert len(CLASSES[dataset]) == len(set(CLASSES[dataset]))
    level = DATASET_LEVEL.get(dataset, "scene")
    assert set(kb.label_map[dataset]) == set(CLASSES[dataset])
    for label in CLASSES[dataset]:
        assert kb.get(kb.resolve(label, dataset)).level.value == level


def test_synthetic_vocabulary_resolves_to_its_level(kb):
    for level, names in SYNTHETIC.items():
        for name in names:
            assert kb.get(kb.resolve(name, "synthetic")).level.value == level
            assert kb.resolve(name, level=level) == kb.resolve(name, "synthetic")


def test_merged_classes_share_one_entry(kb):
    parking = {kb.resolve("Parking", "aid"), kb.resolve("parkinglot", "ucmerced"),
               kb.resolve("parking_lot", "nwpu_resisc45"), kb.resolve("parking_lot", "synthetic")}
    assert len(parking) == 1
    assert kb.resolve("Port", "aid") == kb.resolve("harbor", "ucmerced")
    assert kb.resolve("plane", "dota_v2") == kb.resolve("airplane", "synthetic")


def test_paraphrases_cover_benchmark_classes_and_never_name_them(kb):
    paraphrases = load_paraphrases()
    for level, ids in required_ids(kb).items():
        assert ids, level
        missing = sorted(i for i in ids if len(paraphrases.get(i, [])) < 2)
        assert not missing, f"{level} classes without 2 paraphrases: {missing}"
    assert name_violations(kb, paraphrases) == []


def test_name_check_catches_a_leak(kb):
    leaks = name_violations(kb, {"scene.parking_lot": ["a big Car-Park near shops"],
                                 "object.car": ["three cars on a road"]})
    assert len(leaks) == 2


def test_paraphrase_evaluation_reports_each_level(kb):
    scores = evaluate_paraphrases(kb)
    paraphrases = load_paraphrases()
    n_scene = sum(len(t) for i, t in paraphrases.items() if i.startswith("scene."))
    assert scores["scene"].n == n_scene
    for score in scores.values():
        assert 0.0 <= score.recall_at_1 <= score.recall_at_5 <= 1.0


def test_unknown_dataset_is_an_error(kb):
    with pytest.raises(KnowledgeBaseError, match="unknown dataset 'imagenet'"):
        kb.resolve("forest", "imagenet")


@pytest.mark.slow
def test_minilm_scene_paraphrase_recall_meets_target(tmp_path, minilm):
    """The retrieval target of the shipped base: described (not named) scenes are found."""
    scores = evaluate_paraphrases(KnowledgeBase.load(encoder=minilm, cache_dir=tmp_path))
    assert scores["scene"].recall_at_5 >= 0.9
    assert scores["object"].recall_at_5 >= 0.8
