INSERT INTO fmnist_cos_vec (id, label, v) SELECT id, label, v FROM fmnist_cos_vec_stage WHERE id = (SELECT nextval('fmnist_cos_vec_stage_seq'));
